"""The HTTP client: one `requests.Session` for the service or the embedded simulator.

Rules that protect money and secrets:
- A submit is resent only when the service certainly did not take it: a 429 refusal, or a
  connection that was never established. Any other failure after the request may have left
  (a read timeout, a dropped connection, a 5xx answer, an unreadable reply) raises
  SubmitUnknownError: it may have been accepted and billed, and only the user can decide.
- Status polls, uploads and downloads are safe to repeat: transient failures (429 with
  Retry-After, 5xx, connection errors, timeouts, truncated bodies) are retried with capped
  exponential backoff and full jitter.
- The key goes only to the API's own host (result URLs live on CDNs), never into a message,
  a repr or a log line; plain http is refused except to loopback.
- Downloads stream to `<dest>.part`, are checked (length, video signature), then renamed.

Thread safety: the tracker's workers call status() and download() concurrently. The session
is configured once and never mutated afterwards; its adapter pool is sized for the workers.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..contract import (
    DEFAULT_BASE_URL,
    MAX_IMAGE_BYTES,
    STATUS_PATH,
    SUBMIT_PATH,
    UPLOAD_PATH,
    is_loopback_host,
    sniff_image,
    sniff_video,
)
from ..errors import (
    APIError,
    ConfigError,
    DownloadError,
    ExpiredError,
    KlingError,
    RateLimitError,
    ServerError,
    SubmitUnknownError,
    TransportError,
    api_error_for,
)
from .status import TaskStatus

log = logging.getLogger("kling_nb.client")

RETRY_STATUSES = {429, 500, 502, 503, 504}
_BAD_TASK_ID = re.compile(r"[/\\\x00-\x1f]|\.\.")


class Client:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep=time.sleep,
        environ=os.environ,
    ):
        base = (base_url or environ.get("TOAPIS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"base URL must be http(s)://host, got {base!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ConfigError(f"refusing plain http to {parts.hostname}: the key would travel unencrypted; use https")
        self.base_url = base
        self._api_host = (parts.scheme, parts.hostname, parts.port)
        self._key = api_key if api_key is not None else environ.get("TOAPIS_API_KEY") or None
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random.Random()
        self.session = session or requests.Session()
        if session is None:
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        self.session.trust_env = False  # no netrc/proxy auth surprises with the key

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, key={'***' if self._key else None})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- endpoints ---------------------------------------------------------------------
    def submit(self, body: dict) -> TaskStatus:
        """POST a generation. Billed when accepted; never resent when the outcome is unknown."""
        url = self.base_url + SUBMIT_PATH
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.session.post(url, json=body, headers=self._auth(), timeout=self.timeout, allow_redirects=False)
            except requests.ConnectionError as err:
                if _never_sent(err) and attempt < self.max_retries:
                    self._backoff(attempt, None, "submit: could not connect")
                    continue
                if _never_sent(err):
                    raise TransportError(f"could not connect to {self._host()}: nothing was sent") from None
                raise _unknown("the connection dropped before the reply") from None
            except requests.Timeout:
                raise _unknown("no reply within the timeout") from None
            except requests.RequestException as err:
                raise _unknown(type(err).__name__) from None
            with resp:
                if resp.status_code == 429 and attempt < self.max_retries:
                    self._backoff(attempt, _retry_after(resp), "submit: rate limited (not accepted)")
                    continue
                if resp.status_code >= 500:
                    raise _unknown(f"the service answered HTTP {resp.status_code}")
                if resp.status_code != 200:
                    raise self._error(resp)
                try:
                    task = TaskStatus.from_json(resp.json())
                except ValueError:
                    raise _unknown("the reply was not a task object") from None
                if _BAD_TASK_ID.search(task.id):
                    raise _unknown(f"the reply's task id {task.id[:60]!r} is malformed")
                return task
        raise AssertionError("unreachable")  # pragma: no cover

    def status(self, task_id: str) -> TaskStatus:
        if not isinstance(task_id, str) or not task_id or _BAD_TASK_ID.search(task_id):
            raise KlingError(f"refusing a malformed task id {task_id!r}")
        url = self.base_url + STATUS_PATH.format(task_id=quote(task_id, safe=""))
        resp_json = self._retrying("status", lambda: self.session.get(url, headers=self._auth(), timeout=self.timeout))
        try:
            return TaskStatus.from_json(resp_json)
        except ValueError as err:
            raise TransportError(f"the status reply for {task_id} was not a task object ({err})") from None

    def upload(self, path: str | os.PathLike) -> str:
        """Upload a local image; returns the URL the service gives it."""
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise KlingError(f"{path.name} is {size / 1e6:.1f} MB; the upload limit is 10 MB")
        with open(path, "rb") as f:
            mime = sniff_image(f.read(16))
        if mime is None:
            raise KlingError(f"{path.name} is not a JPEG, PNG, WebP or GIF image")

        def send():
            with open(path, "rb") as f:
                return self.session.post(
                    self.base_url + UPLOAD_PATH,
                    files={"file": (path.name, f, mime)},
                    data={"purpose": "generation"},
                    headers=self._auth(),
                    timeout=self.timeout,
                )

        data = self._retrying("upload", send)
        if not isinstance(data, dict) or not data.get("success") or not isinstance(data.get("data"), dict):
            raise APIError(str((data or {}).get("message") or "upload refused"), status=200)
        url = data["data"].get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise TransportError("the upload reply has no http(s) URL")
        return url

    def download(self, url: str, dest: str | os.PathLike, *, chunk_size: int = 1 << 16) -> Path:
        """Stream a result to `dest` (via `dest.part`); retried; checked to be a video."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise DownloadError(f"refusing to download from a non-http(s) URL ({urlsplit(url).scheme}:)")
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        last: KlingError | None = None
        for attempt in range(self.max_retries + 1):
            try:
                self._download_once(url, part, chunk_size)
                os.replace(part, dest)
                return dest
            except (TransportError, ServerError, RateLimitError) as err:
                last = err
                if attempt < self.max_retries:
                    self._backoff(attempt, getattr(err, "retry_after", None), f"download: {err.message}")
            except KlingError:
                part.unlink(missing_ok=True)
                raise
            finally:
                if part.exists() and not dest.exists():
                    part.unlink(missing_ok=True)
        raise DownloadError(f"could not download the video: {last.message if last else 'unknown error'}")

    def _download_once(self, url: str, part: Path, chunk_size: int, hops: int = 0) -> None:
        headers = self._auth() if self._same_host(url) else {}
        try:
            resp = self.session.get(url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            raise TransportError("the download timed out") from None
        except requests.RequestException as err:
            raise TransportError(f"the download failed ({type(err).__name__})") from None
        with resp:
            if resp.is_redirect:
                target = resp.headers.get("Location", "")
                target = requests.compat.urljoin(url, target)
                if urlsplit(target).scheme not in ("http", "https") or hops >= 5:
                    raise DownloadError("refusing a redirect to a non-http(s) location (or too many redirects)")
                # Followed by hand so the key is re-decided for the new host (never sent off-host).
                return self._download_once(target, part, chunk_size, hops + 1)
            if resp.status_code in (403, 404, 410):
                raise ExpiredError(
                    f"the video URL answered HTTP {resp.status_code}: it has expired or been removed"
                )
            if resp.status_code in RETRY_STATUSES:
                raise api_error_for(resp.status_code, f"download answered HTTP {resp.status_code}",
                                    retry_after=_retry_after(resp))
            if resp.status_code != 200:
                raise DownloadError(f"the video URL answered HTTP {resp.status_code}")
            expected = resp.headers.get("Content-Length")
            written = 0
            try:
                with open(part, "wb") as f:
                    for chunk in resp.iter_content(chunk_size):
                        if written == 0 and sniff_video(chunk[:16]) is None:
                            raise DownloadError("the downloaded file is not a video (no MP4/WebM signature)")
                        f.write(chunk)
                        written += len(chunk)
            except requests.RequestException as err:
                raise TransportError(f"the download broke off ({type(err).__name__})") from None
            if expected is not None and expected.isdigit() and written != int(expected):
                raise TransportError(f"the download was truncated ({written} of {expected} bytes)")
            if written == 0:
                raise DownloadError("the downloaded file is empty")

    # -- plumbing ----------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        if not self._key:
            raise ConfigError(
                "no API key: set TOAPIS_API_KEY (or run %kling login); without one, kling_nb uses its simulator"
            )
        return {"Authorization": f"Bearer {self._key}"}

    def _host(self) -> str:
        return urlsplit(self.base_url).hostname or "?"

    def _same_host(self, url: str) -> bool:
        p = urlsplit(url)
        return (p.scheme, p.hostname, p.port) == self._api_host

    def _retrying(self, what: str, send):
        """Send an idempotent request, retrying transient failures; return the JSON reply."""
        last: KlingError | None = None
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = send()
            except requests.Timeout:
                last = TransportError(f"{what}: no reply within the timeout")
            except requests.RequestException as err:
                last = TransportError(f"{what}: connection failed ({type(err).__name__})")
            else:
                with resp:
                    if resp.status_code == 200:
                        try:
                            return resp.json()
                        except ValueError:
                            last = TransportError(f"{what}: the reply was not JSON")
                    elif resp.status_code in RETRY_STATUSES:
                        last = self._error(resp)
                        retry_after = _retry_after(resp)
                    else:
                        raise self._error(resp)
            if attempt < self.max_retries:
                self._backoff(attempt, retry_after, f"{what}: {last.message}")
        raise last

    def _backoff(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self._random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
        if retry_after is not None:
            delay = min(self.backoff_cap, max(delay, retry_after))
        log.info("retrying in %.2f s: %s", delay, why)
        self._sleep(delay)

    def _error(self, resp: requests.Response) -> APIError:
        """The service's own error, as the right APIError subclass (never the raw page)."""
        message, code, type_ = f"HTTP {resp.status_code}", None, None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):
                message = str(err.get("message") or message)
                code, type_ = err.get("code"), err.get("type")
            elif isinstance(data.get("message"), str) and data["message"]:
                message = data["message"]
        message = self._scrub(message)[:500]
        if isinstance(code, str) and code == type_:
            type_ = None
        return api_error_for(resp.status_code, message, code=code if code is not None else type_, type=type_,
                             retry_after=_retry_after(resp))

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _never_sent(err: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request never left."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    text = repr(err.args[0]) if err.args else ""
    return "NewConnectionError" in text or "Connection refused" in text or "NameResolutionError" in text


def _unknown(why: str) -> SubmitUnknownError:
    return SubmitUnknownError(
        f"the submit's outcome is unknown ({why}): it may have been accepted and billed, so it was not "
        "resent. Check your dashboard, then re-run with --force to submit again."
    )
