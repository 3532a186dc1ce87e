"""Every error kling_nb raises, under one root.

    KlingError                    anything kling_nb refuses or cannot do
    ├── SpecError                 the cell is wrong; nothing was sent (field, line)
    ├── ConfigError               a setting is wrong (e.g. plain http to a remote host)
    ├── APIError                  the service answered with an error (status, code, message)
    │   ├── AuthError             401: missing or bad key
    │   ├── QuotaError            402: balance too low
    │   ├── NotFoundError         404: unknown task id
    │   ├── ContentPolicyError    422: prompt or media refused
    │   ├── RateLimitError        429: too many requests (retry_after)
    │   └── ServerError           5xx: the service failed
    ├── TransportError            no usable answer (connection dropped, timeout, bad JSON)
    ├── NotSentError              a request could not be sent at all (e.g. a body that is not
    │                             valid JSON); nothing left the kernel, nothing was billed
    ├── SubmitUnknownError        a submit may or may not have been accepted (and billed);
    │                             it is never resent automatically
    ├── GenerationFailed          the task ended `failed` (code, message from the service)
    ├── DownloadError             the result could not be saved (truncated, not a video)
    │   └── ExpiredError          the result URL has expired and no local copy exists
    └── DeadlineError             the client stopped waiting; the generation goes on

A KlingError shows in IPython and Jupyter as one short line without a traceback, through
IPython's `_render_traceback_` protocol: no exception handler is replaced, and neither
`%xmode Verbose` nor `%tb` prints a frame or a local variable of kling_nb. Messages are built
from what the service and the user said; the API key is never part of one.
"""

from __future__ import annotations

__all__ = [
    "KlingError",
    "SpecError",
    "ConfigError",
    "APIError",
    "AuthError",
    "QuotaError",
    "NotFoundError",
    "ContentPolicyError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "NotSentError",
    "SubmitUnknownError",
    "GenerationFailed",
    "DownloadError",
    "ExpiredError",
    "DeadlineError",
]


class KlingError(Exception):
    """Root of every kling_nb error. `message` is what the user reads."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self.message}"]


class SpecError(KlingError):
    """The cell cannot become a valid request. Raised before anything leaves the kernel."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None):
        where = []
        if field:
            where.append(f"`{field}`")
        if line is not None:
            where.append(f"line {line}")
        text = f"{' at '.join(where)}: {message}" if where else message
        super().__init__(text)
        self.field = field
        self.line = line
        self.reason = message


class ConfigError(KlingError):
    """A setting (base URL, key, output folder) cannot be used."""


class APIError(KlingError):
    """The service answered with an error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | int | None = None,
        type: str | None = None,
    ):
        label = f"HTTP {status}" if status else "error"
        if code not in (None, "", status):
            label += f" {code}"
        super().__init__(f"{label}: {message}")
        self.status = status
        self.code = code
        self.type = type
        self.service_message = message


class AuthError(APIError):
    pass


class QuotaError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ContentPolicyError(APIError):
    pass


class RateLimitError(APIError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    pass


class TransportError(KlingError):
    """No usable answer: the connection failed or timed out, or the reply was not JSON."""


class NotSentError(KlingError):
    """The request failed before it left: nothing reached the service, so nothing was billed."""


class SubmitUnknownError(KlingError):
    """A submit was sent but its outcome is unknown; it may have been accepted and billed."""


class GenerationFailed(KlingError):
    """The task ended with status `failed`."""

    def __init__(self, message: str, *, code: str | int | None = None, task_id: str | None = None):
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.task_id = task_id
        self.service_message = message


class DownloadError(KlingError):
    """The finished video could not be saved locally."""


class ExpiredError(DownloadError):
    """The result URL expired before a local copy was saved."""


class DeadlineError(KlingError):
    """kling_nb stopped waiting; the generation itself goes on and can be picked up again."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthError,
    402: QuotaError,
    404: NotFoundError,
    422: ContentPolicyError,
    429: RateLimitError,
}


def api_error_for(status: int, message: str, code=None, type=None, retry_after=None) -> APIError:
    """The APIError subclass for an HTTP status, carrying the service's own words."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    if cls is RateLimitError:
        return RateLimitError(message, status=status, code=code, type=type, retry_after=retry_after)
    return cls(message, status=status, code=code, type=type)
