"""A task's state as a plain frozen value, read from the service's task object.

Everything downstream (tracker, journal, widget, HTML) is built from this value, never from
raw JSON, so an extra field or a status the vendor adds later changes nothing.

The reading is liberal where the vendor's samples differ from its schema: the video URL comes
from `result.data[0].url` or `result.url`, a `thumbnail` from `result` or `result.data[0]`, and
`error` may be an object or a plain string. It is strict where trust is at stake: the server's
text (status, error code and message) passes through the `scrub` the client hands in, a
thumbnail must be an http(s) URL (it is shown in HTML), and when the caller knows which task it
asked about (`task_id=`), the reply's own `id` is never taken in its place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..contract import FINAL_STATUSES, is_http_url


@dataclass(frozen=True)
class TaskStatus:
    id: str
    status: str  # queued, in_progress, completed, failed, or any pending status
    progress: int = 0
    created_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    url: str | None = None
    error_code: str | int | None = None
    error_message: str | None = None
    thumbnail_url: str | None = None  # expires with the video

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(
        cls,
        data: Any,
        *,
        scrub: Callable[[str], str] | None = None,
        task_id: str | None = None,
        default_status: str | None = None,
    ) -> TaskStatus:
        """Read a task object; raise ValueError if it is not one.

        `scrub` cleans every piece of server text kept (the client passes its key scrubber).
        `task_id`: the id that was asked about; it becomes the id whatever the reply says.
        Otherwise the reply must carry a non-empty string `id` (or `task_id`).
        `default_status`: used when the reply has no status (a submit answered with just an id).
        """
        clean = scrub or (lambda text: text)
        if not isinstance(data, dict):
            raise ValueError("task object is not a JSON object")
        if task_id is None:
            task_id = data.get("id", data.get("task_id"))
            if not isinstance(task_id, str) or not task_id:
                raise ValueError("task object has no id")
        status = data.get("status")
        if not isinstance(status, str) or not status:
            if default_status is None:
                raise ValueError("task object has no status")
            status = default_status
        url, thumbnail = _result_urls(data.get("result"))
        code, message = _error(data.get("error"), clean)
        return cls(
            id=task_id,
            status=clean(status),
            progress=_progress(data.get("progress")),
            created_at=_int_or_none(data.get("created_at")),
            completed_at=_int_or_none(data.get("completed_at")),
            expires_at=_int_or_none(data.get("expires_at")),
            url=url,
            error_code=code,
            error_message=message,
            thumbnail_url=thumbnail if is_http_url(thumbnail) else None,
        )


def _result_urls(result: Any) -> tuple[str | None, str | None]:
    """(video URL, thumbnail URL) from `result.data[0]` or from `result` itself."""
    if not isinstance(result, dict):
        return None, None
    places = [result]
    items = result.get("data")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        places.insert(0, items[0])
    url = next((p["url"] for p in places if isinstance(p.get("url"), str) and p["url"]), None)
    thumb = next((p["thumbnail"] for p in places if isinstance(p.get("thumbnail"), str) and p["thumbnail"]), None)
    return url, thumb


def _error(error: Any, clean: Callable[[str], str]) -> tuple[str | int | None, str | None]:
    if isinstance(error, str):
        return None, clean(error) if error else None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code")
    if code is None or code == "":
        code = error.get("type")
    if isinstance(code, str):
        code = clean(code) or None
    elif not isinstance(code, int) or isinstance(code, bool):
        code = None
    message = error.get("message")
    return code, clean(message) if isinstance(message, str) and message else None


def _progress(value: Any) -> int:
    number = _int_or_none(value)
    return 0 if number is None else max(0, min(100, number))


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)
