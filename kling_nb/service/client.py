"""The HTTP client: one `requests.Session` for the service or the embedded simulator.

Rules that protect money:
- A submit is accepted when any 2xx answer carries a usable task id; a 2xx without one is
  SubmitUnknownError. A submit is resent only when the service certainly did not take it: a
  429 refusal, or a connection that was never established. Any other failure after the request
  may have left (a 5xx or 3xx answer, a dropped connection, a read timeout, the total time limit,
  an unreadable reply) raises SubmitUnknownError: it may have been accepted and billed, and only
  the user can decide. A failure before the request leaves (a body that is not valid JSON, such
  as NaN; a header that cannot be sent) raises NotSentError: nothing was sent, nothing billed.
- Status polls, uploads and downloads are safe to repeat: transient failures (429 with
  Retry-After, 5xx, connection errors, timeouts, truncated bodies) are retried with capped
  exponential backoff and full jitter. So are the balance reads (GET /v1/balance,
  GET /v1/user/balance).
- Creating an API key (POST /v1/tokens, `create_token`) follows the submit rule: resent only
  after a 429 or a connection never made; any other failure after the request may have left
  raises SubmitUnknownError (a key may exist: check the dashboard's key list). Arguments that
  cannot make a valid request raise NotSentError before anything is sent.
- A 402 is a QuotaError in the service's words, plus the remaining credits when the reply
  states them.

Rules that protect the key:
- It is held in a `Secret` (no plain-string attribute, never in a repr); a bad base URL is
  refused before any local variable holds it as text, so a verbose traceback cannot show it.
- It goes only to the API's own origin (scheme, host, port). API requests never follow a
  redirect (one is a TransportError, or SubmitUnknownError for a submit); downloads follow up to
  5 by hand and drop the header for any other origin. Plain http is refused except to a
  loopback address or `localhost` itself.
- Server text that reaches an error or a TaskStatus (error message, code and type, a plain
  string `error`, a failed task's error, an upload refusal) passes once through `scrub()`: the
  key and anything shaped like `Bearer <token>` become `***`, and the text is capped.
- A key made with `create_token` is held only in the NewToken's `Secret`; every string of the
  token endpoint's reply is cleaned of it (with and without its `sk-` prefix) before any of
  that text can reach an error, and the rest then passes through `scrub()` as above.

Rules that protect the kernel and the disk:
- Every request has a total wall-clock limit (`max_request_s`, `max_upload_s`,
  `max_download_s`), not only a per-read timeout: a timer shuts the request's socket when the
  limit passes (on the client's own session; an injected session gets the checks between
  chunks only), and readers check it between chunks, so a server trickling a byte at a time
  (into the reply's head or its body) cannot hold a worker. A download that used its whole
  limit is not retried. JSON replies are read up to `max_json_bytes` (1 MB), videos up to
  `max_video_bytes` (2 GiB).
- A download streams into a unique temporary file created exclusively in the destination
  folder (never through a symlink), is checked (length, a video signature in its first 16
  bytes, and PyAV must open it and find a video stream), then renamed over the destination.
  A destination that is a symlink is refused; one that already holds the same bytes counts as
  done (two downloads racing to one file both succeed); a full disk is a DownloadError; no
  temporary file outlives a failure.

Thread safety: the tracker's workers call status() and download() concurrently. The session
is configured once and never mutated afterwards; its adapter pool is sized for the workers.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import math
import os
import random
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

from ..contract import (
    DEFAULT_BASE_URL,
    MAX_IMAGE_BYTES,
    STATUS_PATH,
    SUBMIT_PATH,
    UPLOAD_PATH,
    is_http_url,
    is_loopback_host,
    sniff_image,
    sniff_video,
    url_scheme,
)
from ..errors import (
    APIError,
    ConfigError,
    DownloadError,
    ExpiredError,
    KlingError,
    NotSentError,
    RateLimitError,
    ServerError,
    SubmitUnknownError,
    TransportError,
    api_error_for,
)
from .account import KEY_PREFIX, MAX_TOKEN_NAME, QUOTA_PER_CREDIT, Balance, NewToken, amount, raw_key, secret_key
from .secret import Secret, scrub
from .status import TaskStatus

log = logging.getLogger("kling_nb.client")

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_JSON_BYTES = 1 << 20  # 1 MiB: a task object is a few hundred bytes
MAX_VIDEO_BYTES = 2 << 30  # 2 GiB
MAX_REDIRECTS = 5
MAX_TASK_ID = 200
_BAD_TASK_ID = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The account endpoints (docs/api-contract.md section 4).
BALANCE_PATH = "/v1/balance"
USER_BALANCE_PATH = "/v1/user/balance"
TOKENS_PATH = "/v1/tokens"


class Client:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_request_s: float = 60.0,
        max_upload_s: float = 300.0,
        max_download_s: float = 1800.0,
        max_json_bytes: int = MAX_JSON_BYTES,
        max_video_bytes: int = MAX_VIDEO_BYTES,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep: Callable[[float], object] = time.sleep,
        environ: Mapping[str, str] = os.environ,
    ):
        try:
            self._key = _read_key(api_key, environ)
            base = base_url or environ.get("TOAPIS_BASE_URL") or DEFAULT_BASE_URL
        finally:
            # From here on the key exists only inside the Secret: a traceback through this
            # frame (a bad base URL, just below) no longer has these two.
            del api_key, environ
        self.base_url, self._api_origin = _parse_base_url(base)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("max_request_s", max_request_s),
            ("max_upload_s", max_upload_s),
            ("max_download_s", max_download_s),
            ("max_json_bytes", max_json_bytes),
            ("max_video_bytes", max_video_bytes),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_request_s = max_request_s
        self.max_upload_s = max_upload_s
        self.max_download_s = max_download_s
        self.max_json_bytes = max_json_bytes
        self.max_video_bytes = max_video_bytes
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random.Random()
        self.session = session or requests.Session()
        if session is None:
            adapter = _WatchedAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        self.session.trust_env = False  # no netrc/proxy auth surprises with the key

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def __repr__(self) -> str:
        key = "***" if getattr(self, "_key", None) is not None else None
        return f"Client(base_url={getattr(self, 'base_url', None)!r}, key={key})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints ---------------------------------------------------------------------
    def submit(self, body: dict[str, Any]) -> TaskStatus:
        """POST a generation. Billed when accepted; never resent when the outcome is unknown."""
        try:
            payload = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as err:
            reason = str(err)[:200]
            raise NotSentError(f"the request body is not valid JSON ({reason}); nothing was sent") from None
        reply = self._post_once("submit", self.base_url + SUBMIT_PATH, payload, _unknown, "")
        if 200 <= reply.status < 300:
            return self._accepted(reply)
        if 400 <= reply.status < 500:
            raise self._error(reply)
        raise _unknown(f"the service answered HTTP {reply.status}")

    def _post_once(
        self, what: str, url: str, payload: bytes, unknown: Callable[[str], KlingError], never_made: str
    ) -> _Reply:
        """Send a POST that creates something billed or lasting (a generation, a key) at most
        once. It is sent again only when it certainly did not arrive: a connection that was
        never made, or a 429 refusal. Anything else that goes wrong after it may have left
        raises `unknown(why)`: only the user can decide to send it again."""
        self._auth()  # no key: a ConfigError now, not an "unknown outcome" later
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._exchange(
                    "POST",
                    url,
                    what=what,
                    limit_s=self.max_request_s,
                    auth=True,
                    data=payload,
                    headers={"Content-Type": "application/json"},
                )
            except _NotSent as err:
                raise NotSentError(f"{what}: {err.reason}; nothing was sent") from None
            except _NoConnection as err:
                if attempt < self.max_retries:
                    self._backoff(attempt, None, f"{what}: {err.reason} (nothing was sent)")
                    continue
                raise TransportError(f"could not connect to {self._host()}: nothing was sent{never_made}") from None
            except _Broken as err:
                raise unknown(err.reason) from None
            except KlingError:
                raise
            except Exception as err:  # unforeseen, and the request may have left: never resend
                raise unknown(type(err).__name__) from None
            if reply.status == 429 and attempt < self.max_retries:
                self._backoff(attempt, _retry_after(reply.headers), f"{what}: rate limited (not accepted)")
                continue
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def status(self, task_id: str) -> TaskStatus:
        """The task's current state. The result's `id` is always `task_id`, whatever the reply says."""
        if not _usable_task_id(task_id):
            raise KlingError(f"refusing a malformed task id {str(task_id)[:80]!r}")
        url = self.base_url + STATUS_PATH.format(task_id=quote(task_id, safe=""))
        data = self._retrying("status", "GET", url, limit_s=self.max_request_s)
        try:
            task = TaskStatus.from_json(data, scrub=self._scrub, task_id=task_id)
        except ValueError as err:
            raise TransportError(f"the status reply for {task_id} was not a task object ({err})") from None
        if data.get("id") != task_id:
            log.warning("the status reply for %s named another or no task id; it was kept as %s", task_id, task_id)
        return task

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local image; returns the URL the service gives it."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_IMAGE_BYTES:
                    raise KlingError(_too_big(path.name, size))
                data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError as err:
            raise KlingError(f"cannot read {path.name}: {err.strerror or type(err).__name__}") from None
        if len(data) > MAX_IMAGE_BYTES:  # it grew after the size was taken
            raise KlingError(_too_big(path.name, len(data)))
        mime = sniff_image(data[:16])
        if mime is None:
            raise KlingError(f"{path.name} is not a JPEG, PNG, WebP or GIF image")
        reply = self._retrying(
            "upload",
            "POST",
            self.base_url + UPLOAD_PATH,
            limit_s=self.max_upload_s,
            files={"file": (path.name, data, mime)},
            data={"purpose": "generation"},
        )
        if not isinstance(reply, dict) or reply.get("success") is False or not isinstance(reply.get("data"), dict):
            message = reply.get("message") if isinstance(reply, dict) else None
            raise APIError(self._scrub(message) if message not in (None, "") else "upload refused", status=200)
        url = reply["data"].get("url")
        if not isinstance(url, str) or not is_http_url(url):
            raise TransportError("the upload reply has no http(s) URL")
        return url

    def download(self, url: str, dest: str | os.PathLike[str], *, chunk_size: int = 1 << 16) -> Path:
        """Stream a result to `dest` (via a temporary file beside it); retried; checked to be a video."""
        if not is_http_url(url):
            raise DownloadError(f"refusing to download from a non-http(s) URL ({url_scheme(url) or 'no scheme'}:)")
        dest = Path(dest)
        if dest.is_symlink():
            raise DownloadError(f"refusing to save {dest.name}: it is a symbolic link")
        last: KlingError | None = None
        for attempt in range(self.max_retries + 1):
            try:
                part = self._fetch(url, dest, chunk_size)
            except (TransportError, ServerError, RateLimitError) as err:
                last = err
                if attempt < self.max_retries:
                    self._backoff(attempt, getattr(err, "retry_after", None), f"download: {err.message}")
                continue
            return _place(part, dest)
        raise DownloadError(f"could not download the video: {last.message if last else 'unknown error'}")

    # -- account -----------------------------------------------------------------------
    def balance(self) -> Balance:
        """This key's balance (GET /v1/balance). Safe to repeat: transient failures are retried."""
        return self._balance(BALANCE_PATH, "balance", "key")

    def account_balance(self) -> Balance:
        """The balance of the whole account behind this key (GET /v1/user/balance)."""
        return self._balance(USER_BALANCE_PATH, "account balance", "account")

    def create_token(
        self,
        name: str,
        *,
        credits: float,
        expires_at: float | _dt.datetime | None = None,
        model_limits: str | tuple[str, ...] | list[str] = ("kling-video-o1",),
    ) -> NewToken:
        """Make an API key holding `credits` (POST /v1/tokens), limited to `model_limits` (empty:
        any model), expiring at `expires_at` (Unix s or a datetime; None: never).

        Sent once: resent only after a 429 or a connection never made. Any other failure after
        the request may have left is a SubmitUnknownError, because a key may have been made."""
        body = _token_body(name, credits, expires_at, model_limits)
        payload = json.dumps(body).encode()
        url = self.base_url + TOKENS_PATH
        reply = self._post_once("create_token", url, payload, _token_unknown, ", no key was made")
        return self._made_token(reply, body)

    def _balance(self, path: str, what: str, scope: str) -> Balance:
        data = self._retrying(what, "GET", self.base_url + path, limit_s=self.max_request_s)
        if isinstance(data, dict) and data.get("success") is False:
            message = data.get("message")
            raise APIError(self._scrub(message) if message not in (None, "") else f"{what} refused", status=200)
        try:
            return Balance.from_json(data, scope=scope)
        except ValueError as err:
            raise TransportError(f"the {what} reply was not a balance ({err})") from None

    def _made_token(self, reply: _Reply, sent: dict[str, Any]) -> NewToken:
        """The answer to POST /v1/tokens: a NewToken, or the error it is, never with the new key in it."""
        try:
            data = reply.json()
        except ValueError:
            data = None
        try:
            key, unusable = secret_key(data), None
        except ValueError as err:
            key, unusable = None, str(err)
        new = raw_key(data)
        if new is not None:  # out of every string of the reply before any of them is read
            data = _redact(data, {new, new.removeprefix(KEY_PREFIX)})
            reply = _Reply(reply.status, reply.headers, json.dumps(data).encode())
        del new
        if 200 <= reply.status < 300:
            if isinstance(data, dict) and data.get("success") is False:  # refused: no key was made
                message = data.get("message")
                raise APIError(
                    self._scrub(message) if message not in (None, "") else "create_token refused", status=reply.status
                )
            if key is None:
                why = unusable or ("the reply was not JSON" if data is None else "the reply carried no key")
                raise _token_unknown(f"HTTP {reply.status}, but {why}")
            try:
                return NewToken.from_json(data, sent=sent, scrub=self._scrub, key=key)
            except ValueError as err:
                raise _token_unknown(f"the HTTP {reply.status} reply could not be read: {err}") from None
        if 400 <= reply.status < 500:
            raise self._error(reply)
        raise _token_unknown(f"the service answered HTTP {reply.status}")

    # -- downloads ---------------------------------------------------------------------
    def _fetch(self, url: str, dest: Path, chunk_size: int) -> Path:
        """One attempt: follow redirects by hand (the key is re-decided for every origin) and
        save the video to a checked temporary file, whose path is returned."""
        with _Deadline(self.max_download_s, "the download") as deadline:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    resp = self._open(
                        "GET", url, deadline, auth=self._same_origin(url), headers={"Accept-Encoding": "identity"}
                    )
                except _NotSent as err:
                    raise DownloadError(f"the video URL cannot be requested ({err.reason})") from None
                except _Failure as err:
                    if deadline.fired:
                        raise _too_slow(deadline) from None
                    raise TransportError(f"the download failed: {err.reason}") from None
                with resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("Location", ""))
                        if not is_http_url(url):
                            raise DownloadError("refusing a redirect to a non-http(s) location")
                        continue
                    if resp.status_code in (403, 404, 410):
                        raise ExpiredError(
                            f"the video URL answered HTTP {resp.status_code}: it has expired or been removed"
                        )
                    if resp.status_code in RETRY_STATUSES:
                        raise api_error_for(
                            resp.status_code,
                            f"download answered HTTP {resp.status_code}",
                            retry_after=_retry_after(resp.headers),
                        )
                    if resp.status_code != 200:
                        raise DownloadError(f"the video URL answered HTTP {resp.status_code}")
                    return self._save(resp, dest, deadline, chunk_size)
            raise DownloadError(f"refusing to follow more than {MAX_REDIRECTS} redirects")

    def _save(self, resp: requests.Response, dest: Path, deadline: _Deadline, chunk_size: int) -> Path:
        expected = _content_length(resp.headers)
        if expected is not None and expected > self.max_video_bytes:
            raise DownloadError(f"the video is larger than the limit of {self.max_video_bytes:,} bytes")
        head = b""  # the first bytes, gathered until the signature can be judged
        fd: int | None = None
        part: Path | None = None
        written = 0
        try:
            try:
                for chunk in resp.iter_content(chunk_size):
                    if deadline.passed():
                        raise _too_slow(deadline)
                    if fd is None:
                        head += chunk
                        if len(head) < 16:
                            continue
                        _check_signature(head)
                        fd, part = _create_part(dest)
                        chunk, head = head, b""
                    written += len(chunk)
                    if written > self.max_video_bytes:
                        raise DownloadError(f"the video is larger than the limit of {self.max_video_bytes:,} bytes")
                    _write_all(fd, chunk, dest)
            except requests.RequestException as err:
                if deadline.fired:
                    raise _too_slow(deadline) from None
                raise TransportError(f"the download broke off ({type(err).__name__})") from None
            if deadline.fired:  # a reply without a length ends where the timer cut it
                raise _too_slow(deadline)
            if fd is None:  # fewer than 16 bytes in all
                if not head:
                    raise DownloadError("the downloaded file is empty")
                _check_signature(head)
                fd, part = _create_part(dest)
                written = len(head)
                _write_all(fd, head, dest)
            if expected is not None and written != expected:
                raise TransportError(f"the download was truncated ({written:,} of {expected:,} bytes)")
            assert part is not None
            _close_part(fd, dest)
            fd = None
            _probe_video(part)
            return part
        except BaseException:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if part is not None:
                part.unlink(missing_ok=True)
            raise

    # -- plumbing ----------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        if self._key is None:
            raise ConfigError(
                "no API key: set TOAPIS_API_KEY (or run %kling login); without one, kling_nb uses its simulator"
            )
        return {"Authorization": "Bearer " + self._key.reveal()}

    def _scrub(self, text: object) -> str:
        return scrub(text, self._key)

    def _host(self) -> str:
        return urlsplit(self.base_url).hostname or "?"

    def _same_origin(self, url: str) -> bool:
        return _origin(url) == self._api_origin

    def _open(
        self,
        method: str,
        url: str,
        deadline: _Deadline,
        *,
        auth: bool,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request, its body streamed and no redirect followed. Failures are sorted by
        whether the request can have left: _NotSent, _NoConnection (never connected), _Broken."""
        try:
            prepared = self.session.prepare_request(
                requests.Request(method, url, headers={**(self._auth() if auth else {}), **(headers or {})}, **kwargs)
            )
        except KlingError:
            raise
        except Exception as err:  # a header, URL or body that cannot be sent: refused while building
            raise _NotSent(_short(err)) from None
        _watched.deadline = deadline
        try:
            return self.session.send(
                prepared,
                stream=True,
                allow_redirects=False,
                timeout=(self.connect_timeout, max(0.01, min(self.read_timeout, deadline.remaining()))),
            )
        except UnicodeError:  # a header that is not Latin-1: refused before a byte was written
            raise _NotSent("a request header cannot be encoded") from None
        except requests.ConnectionError as err:
            if deadline.fired:
                raise _Broken(deadline.words) from None
            if _never_connected(err):
                raise _NoConnection(f"could not connect to {urlsplit(url).hostname or '?'}") from None
            if _certificate_refused(err):
                raise _NotSent(f"the TLS certificate of {urlsplit(url).hostname or '?'} was not accepted") from None
            raise _Broken("the connection dropped before the reply") from None
        except requests.Timeout:
            raise _Broken(deadline.words if deadline.fired else "no reply within the timeout") from None
        except requests.RequestException as err:
            raise _Broken(deadline.words if deadline.fired else type(err).__name__) from None
        finally:
            _watched.deadline = None

    def _exchange(
        self, method: str, url: str, *, what: str, limit_s: float, auth: bool = True, **kwargs: Any
    ) -> _Reply:
        """One request whose whole reply is read (capped, within the time limit)."""
        with _Deadline(limit_s, "the request") as deadline:
            resp = self._open(method, url, deadline, auth=auth, **kwargs)
            with resp:
                strict = 200 <= resp.status_code < 300
                body = _read_capped(resp, deadline, self.max_json_bytes, what, strict=strict)
                return _Reply(resp.status_code, resp.headers, body)

    def _accepted(self, reply: _Reply) -> TaskStatus:
        """A 2xx answer to a submit: the task, or SubmitUnknownError if it carries no usable id."""
        try:
            data = reply.json()
        except ValueError:
            raise _unknown(f"the HTTP {reply.status} reply was not JSON") from None
        try:
            task = TaskStatus.from_json(data, scrub=self._scrub, default_status="queued")
        except ValueError:
            raise _unknown(f"the HTTP {reply.status} reply carried no task id") from None
        if not _usable_task_id(task.id) or self._scrub(task.id) != task.id:
            raise _unknown(f"the reply's task id {self._scrub(task.id)[:60]!r} is malformed")
        return task

    def _retrying(self, what: str, method: str, url: str, *, limit_s: float, **kwargs: Any) -> Any:
        """Send an idempotent request, retrying transient failures; return the JSON reply."""
        last: KlingError | None = None
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                reply = self._exchange(method, url, what=what, limit_s=limit_s, **kwargs)
            except _NotSent as err:
                raise NotSentError(f"{what}: {err.reason}; nothing was sent") from None
            except _Failure as err:
                last = TransportError(f"{what}: {err.reason}")
            else:
                if 200 <= reply.status < 300:
                    try:
                        return reply.json()
                    except ValueError:
                        last = TransportError(f"{what}: the reply was not JSON")
                elif reply.status in RETRY_STATUSES:
                    last = self._error(reply)
                    retry_after = _retry_after(reply.headers)
                elif 300 <= reply.status < 400:
                    raise TransportError(
                        f"{what}: the service answered with a redirect (HTTP {reply.status}); it is not followed, "
                        f"so the key never leaves {self._host()}"
                    )
                else:
                    raise self._error(reply)
            if attempt < self.max_retries:
                self._backoff(attempt, retry_after, f"{what}: {last.message}")
        assert last is not None
        raise last

    def _backoff(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self._random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
        if retry_after is not None:
            delay = min(self.backoff_cap, max(delay, retry_after))
        log.info("retrying in %.2f s: %s", delay, why)
        self._sleep(delay)

    def _error(self, reply: _Reply) -> APIError:
        """The service's own error, as the right APIError subclass (never the raw page)."""
        message, code, type_ = f"HTTP {reply.status}", None, None
        try:
            data = reply.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                if err.get("message") not in (None, ""):
                    message = self._scrub(err["message"])
                code, type_ = err.get("code"), err.get("type")
            elif isinstance(err, str) and err:
                message = self._scrub(err)
            elif data.get("message") not in (None, ""):
                message = self._scrub(data["message"])
        code = self._scrub(code) if isinstance(code, str) else code if _is_int(code) else None
        type_ = self._scrub(type_) if isinstance(type_, str) else None
        if isinstance(code, str) and code == type_:
            type_ = None
        if reply.status == 402 and isinstance(data, dict):  # the remaining credits, when the reply states them
            left = _credits_left(data)
            if left is not None:
                message = f"{message} ({left:g} credits left)"
        return api_error_for(
            reply.status,
            message,
            code=code if code not in (None, "") else type_,
            type=type_,
            retry_after=_retry_after(reply.headers),
        )


# -- settings ----------------------------------------------------------------------------
def _read_key(api_key: str | Secret | None, environ: Mapping[str, str]) -> Secret | None:
    """The key as a Secret (None when there is none); no frame keeps it as text on failure."""
    try:
        if isinstance(api_key, Secret):
            return api_key
        if api_key is None:
            api_key = environ.get("TOAPIS_API_KEY")
        if api_key is None or (isinstance(api_key, str) and not api_key.strip()):
            return None
        return Secret(api_key)
    finally:
        del api_key, environ


_Origin = tuple[str, str | None, int | None]


def _parse_base_url(base: object) -> tuple[str, _Origin]:
    """(the base URL, its origin) or a one-line ConfigError."""
    if not isinstance(base, str):
        raise ConfigError(f"the base URL must be text, not {type(base).__name__}")
    text = base.strip()
    shown = repr(re.sub(r"//[^/?#]*@", "//***@", text)[:120])  # repr: one line, whatever it holds
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise ConfigError(f"the base URL {shown} is not valid ({err}); expected https://host[:port]") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise ConfigError(f"the base URL must look like https://host, got {shown}")
    if port == 0:
        raise ConfigError(f"the base URL {shown} has port 0; give a port from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("the base URL must not hold a user name or password (the key goes in TOAPIS_API_KEY)")
    if parts.query or parts.fragment or any(c.isspace() or not c.isprintable() for c in parts.netloc):
        raise ConfigError(f"the base URL {shown} is not valid; expected https://host[:port][/path]")
    if scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"refusing plain http to {host}: the key would travel unencrypted; use https")
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/"), (scheme, host, port or _DEFAULT_PORTS[scheme])


def _origin(url: str) -> _Origin | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return (scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme))
    except ValueError:
        return None


# -- request plumbing --------------------------------------------------------------------
class _Failure(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _NotSent(_Failure):
    """Failed before the request left."""


class _NoConnection(_Failure):
    """The connection was never established, so nothing was sent."""


class _Broken(_Failure):
    """Failed after the request may have left (dropped, timed out, cut off, unreadable)."""


class _TooLarge(_Broken):
    pass


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("the reply nests too deeply") from None


def _read_capped(resp: requests.Response, deadline: _Deadline, limit: int, what: str, *, strict: bool) -> bytes:
    """The whole body, within the deadline. Past `limit` bytes: _TooLarge if `strict`, else
    what was read so far (an error page is only ever skimmed for its message)."""
    declared = _content_length(resp.headers)
    too_large = f"the reply is larger than {limit:,} bytes"
    if strict and declared is not None and declared > limit:
        raise _TooLarge(too_large)
    body = bytearray()
    try:
        for chunk in resp.iter_content(16 * 1024):
            body += chunk
            if len(body) > limit:
                if strict:
                    raise _TooLarge(too_large)
                return bytes(body[:limit])
            if deadline.passed():
                raise _Broken(deadline.words)
    except requests.RequestException as err:
        raise _Broken(deadline.words if deadline.fired else f"the reply broke off ({type(err).__name__})") from None
    if deadline.fired:  # a reply without a length ends where the timer cut it
        raise _Broken(deadline.words)
    return bytes(body)


_watched = threading.local()  # the deadline of the request this thread is sending, if any


class _Deadline:
    """The wall-clock limit of one request. Readers check `passed()` between chunks; a timer
    shuts the request's socket when the limit passes, so a read blocked on a server that
    trickles bytes (into the reply's head, or one long chunk) returns too."""

    def __init__(self, seconds: float, what: str):
        self.words = f"{what} took longer than its limit of {seconds:g} s"
        self.fired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def passed(self) -> bool:
        return self.fired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if not self.fired:
                self._sock = sock
                return
        _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock, self._sock = self._sock, None
        if sock is not None:
            _shut(sock)

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket call, also for TLS sockets: it only wakes the blocked reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedHTTPConnection(HTTPConnection):
    """A urllib3 connection that hands its socket to the sending thread's deadline."""

    def connect(self) -> None:
        super().connect()
        self._hand_to_deadline()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._hand_to_deadline()  # a reused connection is already connected
        super().request(*args, **kwargs)

    def _hand_to_deadline(self) -> None:
        deadline = getattr(_watched, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _causes(err: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (args, reason, cause, context)."""
    seen: set[int] = set()
    todo = [err]
    while todo and len(seen) < 32:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo += [x for x in (getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(x, BaseException)]


def _never_connected(err: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request never left."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    for e in _causes(err):
        if isinstance(e, ConnectTimeoutError):  # NewConnectionError and NameResolutionError too
            return True
    text = repr(err.args[0]) if err.args else ""
    return "NewConnectionError" in text or "Connection refused" in text or "NameResolutionError" in text


def _certificate_refused(err: requests.ConnectionError) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(err))


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _usable_task_id(task_id: object) -> bool:
    return (
        isinstance(task_id, str)
        and 0 < len(task_id) <= MAX_TASK_ID
        and task_id.isprintable()
        and not _BAD_TASK_ID.search(task_id)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())[:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _too_big(name: str, size: int) -> str:
    amount = f"{size:,} bytes" if size < 2 * MAX_IMAGE_BYTES else f"{size / 2**20:.1f} MiB"
    return f"{name} is {amount}; the limit is {MAX_IMAGE_BYTES:,} bytes ({MAX_IMAGE_BYTES // 2**20} MiB)"


def _token_unknown(why: str) -> SubmitUnknownError:
    return SubmitUnknownError(
        f"creating the API key had an unknown outcome ({why}): a key may have been made, so the request "
        "was not resent. Check the key list in your dashboard before creating another."
    )


def _token_body(name: object, credits: object, expires_at: object, model_limits: object) -> dict[str, Any]:
    """The POST /v1/tokens body, or NotSentError for arguments the service would refuse."""

    def refuse(why: str) -> NotSentError:
        return NotSentError(f"create_token: {why}; nothing was sent")

    if not isinstance(name, str) or not name.strip():
        raise refuse("the name must be non-empty text")
    if len(name) > MAX_TOKEN_NAME or not name.isprintable():
        raise refuse(f"the name must be at most {MAX_TOKEN_NAME} printable characters")
    if isinstance(credits, bool) or not isinstance(credits, (int, float)) or not math.isfinite(credits) or credits < 0:
        raise refuse("credits must be a number, 0 or more")
    if expires_at is None:
        expired_time = -1
    else:
        if isinstance(expires_at, _dt.datetime):
            expires_at = expires_at.timestamp()  # a naive datetime is local time, as datetime reads it
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)) or not math.isfinite(expires_at):
            raise refuse("expires_at must be a Unix time in seconds, a datetime or None")
        if expires_at <= time.time():
            raise refuse("expires_at is in the past")
        expired_time = math.ceil(expires_at)
    if isinstance(model_limits, str):
        model_limits = (model_limits,)
    if not isinstance(model_limits, (tuple, list)):
        raise refuse("model_limits must be a tuple or list of model names")
    limits: list[str] = []
    for m in model_limits:
        if not isinstance(m, str) or not m.strip() or "," in m or not m.isprintable():
            raise refuse("model_limits must be model names without commas")
        limits.append(m.strip())
    return {
        "name": name,
        "expired_time": expired_time,
        "remain_quota": round(credits * QUOTA_PER_CREDIT),
        "unlimited_quota": False,
        "model_limits_enabled": bool(limits),
        "model_limits": ",".join(limits),
    }


def _redact(value: Any, secrets_: set[str]) -> Any:
    """A JSON value with every given text replaced by *** in every string in it (keys included)."""
    if isinstance(value, str):
        for text in sorted(secrets_, key=len, reverse=True):
            if text:
                value = value.replace(text, "***")
        return value
    if isinstance(value, dict):
        return {_redact(k, secrets_): _redact(v, secrets_) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets_) for v in value]
    return value


def _credits_left(data: dict[str, Any]) -> float | None:
    """`remain_credits` from a refusal's error object, its `data` or its top level."""
    for place in (data.get("error"), data.get("data"), data):
        if isinstance(place, dict):
            left = amount(place.get("remain_credits"))
            if left is not None:
                return left
    return None


def _unknown(why: str) -> SubmitUnknownError:
    return SubmitUnknownError(
        f"the submit's outcome is unknown ({why}): it may have been accepted and billed, so it was not "
        "resent. Check your dashboard, then re-run with --force to submit again."
    )


# -- files -------------------------------------------------------------------------------
def _too_slow(deadline: _Deadline) -> DownloadError:
    # Final, not retried: an attempt that used the whole limit would only use it again.
    return DownloadError(f"could not download the video: {deadline.words}")


def _check_signature(head: bytes) -> None:
    if sniff_video(head[:16]) is None:
        raise DownloadError("the downloaded file is not a video (no MP4/WebM signature)")


def _disk_error(err: OSError, dest: Path) -> DownloadError:
    if err.errno == errno.ENOSPC:
        return DownloadError(f"no space left on device while saving {dest.name}")
    if err.errno == errno.EDQUOT:
        return DownloadError(f"disk quota exceeded while saving {dest.name}")
    if err.errno == errno.ENOENT:
        return DownloadError(f"cannot save {dest.name}: the folder {dest.parent} does not exist")
    return DownloadError(f"cannot save {dest.name}: {err.strerror or type(err).__name__}")


def _create_part(dest: Path) -> tuple[int, Path]:
    """A new, unique temporary file beside `dest`: O_CREAT|O_EXCL|O_NOFOLLOW, so never an
    existing file or a symlink someone planted."""
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".kling-", suffix=".part")
    except OSError as err:
        raise _disk_error(err, dest) from None
    try:
        os.fchmod(fd, _file_mode())
    except OSError:
        pass
    return fd, Path(name)


def _write_all(fd: int, data: bytes, dest: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as err:
        raise _disk_error(err, dest) from None


def _close_part(fd: int, dest: Path) -> None:
    try:
        os.fsync(fd)  # the bytes are on disk before the name points at them
    except OSError as err:
        os.close(fd)
        raise _disk_error(err, dest) from None
    try:
        os.close(fd)
    except OSError as err:
        raise _disk_error(err, dest) from None


def _probe_video(path: Path) -> None:
    """PyAV must open the file and find a video stream in it."""
    try:
        import av  # here, not at the top: importing the client must not load FFmpeg
    except ImportError:
        log.warning("PyAV is not importable: %s was checked by its signature only", path.name)
        return
    try:
        with av.open(str(path)) as container:
            playable = bool(container.streams.video)
    except Exception:
        playable = False
    if not playable:
        raise DownloadError("the downloaded file is not a playable video")


def _place(part: Path, dest: Path) -> Path:
    """Move a checked temporary file to `dest`: never through a symlink; an existing file
    with the same bytes (another download of the same video won the race) counts as done."""
    try:
        if dest.is_symlink():
            raise DownloadError(f"refusing to save {dest.name}: it is a symbolic link")
        if _same_bytes(dest, part):
            part.unlink()
        else:
            os.replace(part, dest)  # replaces a name, never writes through one
        return dest
    except BaseException as err:
        part.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _disk_error(err, dest) from None
        raise


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        if not a.is_file() or a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


_mode_lock = threading.Lock()
_mode: list[int] = []


def _file_mode() -> int:
    """0o666 less the process umask (what open() would give), read once without changing it
    for other threads where /proc allows, else 0o644."""
    with _mode_lock:
        if not _mode:
            umask = 0o022
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("Umask:"):
                            umask = int(line.split()[1], 8)
            except (OSError, ValueError, IndexError):
                pass
            _mode.append(0o666 & ~umask)
        return _mode[0]
